"""The presets, at their historical import path; they live in treegrpo/config/presets.py."""

from treegrpo.config.presets import PRESETS, preset_dict

__all__ = ["PRESETS", "preset_dict"]
