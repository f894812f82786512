//! The 16550 UART at COM1: the hypervisor's console.

use super::port::{inb, outb};

const COM1: u16 = 0x3F8;
const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;

/// Programs COM1 for 115200 baud, 8N1, FIFOs on, no interrupts.
pub fn init() {
    outb(COM1 + INT_ENABLE, 0x00);
    outb(COM1 + LINE_CTRL, 0x80); // DLAB on: the next two registers are the divisor
    outb(COM1 + DATA, 0x01); // 115200 / 1
    outb(COM1 + INT_ENABLE, 0x00);
    outb(COM1 + LINE_CTRL, 0x03); // 8 bits, no parity, one stop bit
    outb(COM1 + FIFO_CTRL, 0xC7);
    outb(COM1 + MODEM_CTRL, 0x03);
}

fn put(byte: u8) {
    // Bounded wait: a missing UART must not hang the hypervisor.
    for _ in 0..100_000 {
        if inb(COM1 + LINE_STATUS) & LSR_THR_EMPTY != 0 {
            break;
        }
    }
    outb(COM1 + DATA, byte);
}

/// Writes bytes, turning `\n` into `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}
