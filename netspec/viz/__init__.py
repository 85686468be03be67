"""Pictures and reports: the scene model, network diagrams, charts, training curves and the HTML
report."""
