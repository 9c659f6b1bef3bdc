"""Replays a period with what each policy could know, and settles it at realised prices."""
