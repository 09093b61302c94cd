"""SLO burn rates and training-health rules -> alert lifecycle -> routes -> receivers."""
