# The project's version (Cargo.toml's workspace version): the plugin deploys the image
# of the same version by default.
__version__ = "0.1.0"
