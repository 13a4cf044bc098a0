"""Drawing what judge decided, for people: terminal text, Markdown and PNG of localize reports and of the
drift and invariance tables. It may import judge; judge never imports it, so deciding never depends on drawing."""
