"""The feature network behind the Fréchet / kernel distances every recipe reports."""
