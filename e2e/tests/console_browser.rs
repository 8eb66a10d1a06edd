//! Tests of issue 5 (console_browser); being written.
