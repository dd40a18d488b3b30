"""Ray as every job meets it: joining a cluster or starting a local one set up as a cluster's node,
and the jobs' progress bar and quiet output."""
