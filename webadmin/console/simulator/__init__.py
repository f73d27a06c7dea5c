"""Simulated devices: phones inside webadmin that receive pushes through the Simulator backend."""
