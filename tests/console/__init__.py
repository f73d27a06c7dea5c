"""Tests of the console sections."""
