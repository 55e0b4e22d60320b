"""One module per lesson panel: controls, one experiment call, and a view of its result."""
