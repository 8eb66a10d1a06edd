//! Tests of issue 5 (docs_consistency); being written.
