//! criterion benches for mosaic
