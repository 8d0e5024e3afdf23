"""Decoding-time detoxification methods. See methods/base.py for the interface."""
