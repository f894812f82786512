//! AMD SVM: the VMCB, exit codes, page tables for nested paging and the
//! guest's boot, and the vCPU state. Plain data and logic, host-tested; the
//! instructions themselves (EFER.SVME, VMRUN) are in `arch::x86_64::svm`.

pub mod exit;
pub mod paging;
pub mod vcpu;
pub mod vmcb;
