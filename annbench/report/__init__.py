"""Reports: the HTML report, plots, the neighbours page, exports."""
