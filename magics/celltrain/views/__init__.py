"""Views of the store: widgets, charts, tables. The core never imports them at module level."""
