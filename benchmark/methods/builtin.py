"""Methods that ship with the framework itself (the method under study lands here)."""
