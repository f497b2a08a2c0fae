"""Backbone loading (hub id, local folder, or tiny offline config), processors, LoRA and heads."""
