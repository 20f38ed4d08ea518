"""Experiments: what training, a setting or a device gives, measured on data (real images where
the README of ../shared/data allows) and recorded in docs/."""
