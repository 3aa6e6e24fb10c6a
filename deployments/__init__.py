"""Example model deployments served by raytask."""
