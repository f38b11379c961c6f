//! The backend conformance suite, on the memory backend.

jobsmith_core::conformance_suite!(jobsmith_core::testkit::memory_harness);
