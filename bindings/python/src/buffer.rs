//! Rust-owned bytes lent to Python through the buffer protocol, without a copy.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

use bytes::Bytes;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

/// Read-only bytes fetched by the Rust core, exposed through the buffer protocol: wrap it in
/// `memoryview`, pass it to `numpy.frombuffer`, `bytes()`, or anything that takes a buffer.
/// The bytes stay alive as long as any view of them does.
#[pyclass(frozen, module = "proxystore_rs._native")]
pub struct Buffer {
    data: Bytes,
}

impl Buffer {
    /// A `memoryview` over `data`.
    pub(crate) fn view(py: Python<'_>, data: Bytes) -> PyResult<Bound<'_, PyMemoryView>> {
        let buffer = Bound::new(py, Buffer { data })?;
        PyMemoryView::from(buffer.as_any())
    }
}

#[pymethods]
impl Buffer {
    /// The buffer protocol: a read-only, one-dimensional view of unsigned bytes.
    ///
    /// # Safety
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        // SAFETY: `view` is valid (CPython's contract). The pointer and length are those of
        // `data`, which is immutable (a frozen class over `Bytes`) and lives as long as `slf`;
        // `PyBuffer_FillInfo` takes a strong reference to `slf` into `view.obj`, so the bytes
        // outlive every view. `readonly = 1` refuses writable requests with BufferError.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if status == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// Number of bytes.
    fn __len__(&self) -> usize {
        self.data.len()
    }
}
