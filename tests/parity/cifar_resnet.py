"""CIFAR ResNet of He et al. 2016 (section 4.2) as a torch.nn.Module.

This is the reference convnet's own `resnet20`/`resnet32`/... must match, so the
module and parameter names mirror torchvision's ResNet (conv1, bn1, layerX.Y.*,
fc) and the BasicBlock is torchvision's except for the shortcut, which is the
paper's parameter-free option A.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ShortcutA(nn.Module):
    """Option A shortcut: subsample spatially, zero-pad the new channels.

    The zero channels go at the END of the channel dimension ([0, Cin) carry the
    input, [Cin, Cout) are zeros); convnet's C code relies on exactly this order.
    """

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x):
        if self.stride != 1:
            # Same positions a stride-s 3x3 conv with padding 1 centres on, so the
            # output size matches the residual branch also for odd inputs.
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # F.pad's last pair pads dim 1 (channels): (before=0, after=extra).
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # None for identity keeps the state_dict free of extra entries either way
        # (ShortcutA has no parameters or buffers).
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = None

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, depth, in_channels=3, num_classes=10, zero_init_residual=False):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (n >= 1), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.in_planes = 16
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

        # Same init as torchvision's ResNet (fc keeps nn.Linear's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes, blocks, stride):
        layers = [BasicBlock(self.in_planes, planes, stride)]
        self.in_planes = planes
        for _ in range(1, blocks):
            layers.append(BasicBlock(planes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def cifar_resnet(depth, in_channels=3, num_classes=10, zero_init_residual=False):
    return CifarResNet(depth, in_channels, num_classes, zero_init_residual)


if __name__ == "__main__":
    m = cifar_resnet(20, in_channels=1, num_classes=10)
    count = sum(p.numel() for p in m.parameters())
    print(f"resnet20 (in_channels=1, num_classes=10): {count:,} parameters")
    assert count == 269_434, count
    names = list(m.state_dict())
    assert names[0] == "conv1.weight" and names[-1] == "fc.bias", names
    assert "layer2.0.bn2.num_batches_tracked" in names
    for depth in (20, 32, 44, 56, 110):
        y = cifar_resnet(depth)(torch.randn(2, 3, 32, 32))
        assert y.shape == (2, 10), y.shape
    # Odd spatial sizes: 28 -> 14 -> 7 -> 4 must line up between both branches.
    assert m(torch.randn(2, 1, 28, 36)).shape == (2, 10)
    print("cifar_resnet.py: self-check ok")
