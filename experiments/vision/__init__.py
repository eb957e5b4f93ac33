"""Image classification for the RAdam reproduction: CIFAR-10 ResNet-20 and ImageNet ResNet-18 (paper Sec. 5, Table 1,
Figs. 5-7, Appendix C). The task objects are in experiments/vision/task.py."""
