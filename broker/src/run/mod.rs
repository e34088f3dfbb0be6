//! One run, from the broker's side.
