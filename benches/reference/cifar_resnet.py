"""ResNet-18 with the CIFAR stem at any width, shared by the PyTorch reference scripts
(train_step_torch.py, cifar10_torch.py): the network selfsup's `ResNetConfig::resnet18()
.with_stem(Stem::Cifar).with_width(w)` builds.
"""
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet


class CifarResNet18(ResNet):
    """torchvision's ResNet-18 at width w with the CIFAR stem (3x3 conv, no max-pool)."""

    def __init__(self, w):
        nn.Module.__init__(self)
        self.inplanes, self.dilation, self.groups, self.base_width = w, 1, 1, 64
        self._norm_layer = nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, w, 2)
        self.layer2 = self._make_layer(BasicBlock, 2 * w, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * w, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * w, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
