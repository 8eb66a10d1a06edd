//! Tests of issue 5 (helm_chart); being written.
