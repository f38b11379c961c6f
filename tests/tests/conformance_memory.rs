//! The backend conformance suite, on the memory backend.

jobsmith_conformance::conformance_suite!(jobsmith_conformance::memory_harness);
