//! Tests of issue 5 (console_logic); being written.
