//! `nodeshell dev`: everything at once on this machine (filled by its owner).
