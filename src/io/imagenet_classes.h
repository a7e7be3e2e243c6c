/* The 1000 ImageNet-1k class names in torchvision's order, compiled into convnet. */
#ifndef CN_IO_IMAGENET_CLASSES_H
#define CN_IO_IMAGENET_CLASSES_H

#define CN_IMAGENET_CLASSES 1000
extern const char *const cn_imagenet_classes[CN_IMAGENET_CLASSES];

#endif
