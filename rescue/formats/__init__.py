"""Small text and file formats used across rescue: one reader or writer each."""
