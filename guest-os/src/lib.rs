//! numavisor's guest OS. Its boot path, mm and test suites arrive with the
//! domains issue; the crate exists so that the workspace has its final shape.

#![no_std]
