"""Image densities given by normalising flows: the NICE flow, its training, data and cache."""
