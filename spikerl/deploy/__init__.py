"""From trained agent to neuromorphic hardware: NIR export and import, fixed-point evaluation, energy."""
