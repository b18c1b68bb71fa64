"""Thin command-line entry points: parse arguments, call one stage, print results."""
