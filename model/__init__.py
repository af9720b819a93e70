"""The Multi-Thread Knowledge Transfer Network (MKTN): model, losses, trainer, metrics."""
