//! System tier: the `apiwatch` binary end to end (filled in below).
