"""The synthetic web: a deterministic, locally served stand-in for the internet, with ground truth."""

from curation.synth.server import SynthWebServer
from curation.synth.urls import write_url_list
from curation.synth.web import SynthConfig, SynthWeb, generate_synthetic_web

__all__ = [
    "SynthConfig",
    "SynthWeb",
    "SynthWebServer",
    "generate_synthetic_web",
    "write_url_list",
]
