"""Lightning callbacks that write what a person looks at: image grids, plots, reports."""
