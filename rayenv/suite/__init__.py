"""OSWorld's task suite on rayenv: pick tasks from an ``evaluation_examples`` folder, check which can run
on this host and why not, fill the download cache beforehand, and run them on a pool's desktops."""
