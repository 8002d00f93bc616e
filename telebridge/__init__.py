"""telebridge: Smallest AI Waves text-to-speech on Plivo and Vonage phone calls."""

__version__ = "0.1.0"
