"""Views of the store: widgets, charts, tables; the core never imports them at module level."""
