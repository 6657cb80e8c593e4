//! Memory shared with Python without a copy: Rust-owned bytes lent to Python through the
//! buffer protocol ([`Buffer`]), and Python `bytes` objects that a read fills
//! ([`PyBytesMemory`]).

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;

use bytes::Bytes;
use proxystore::connector::ObjectMemory;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

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

/// A Python `bytes` object of an object's size, made when the size is known and filled by the
/// read itself ([`proxystore::Connector::get_into`]) with the GIL released: what the connector
/// classes of Python ProxyStore's protocol return from `get`. Python ProxyStore's deserializer
/// takes an exact `bytes` as it is (`io.BytesIO` shares it) and copies anything else, so a
/// `bytes` saves a copy of the whole object that a `memoryview` costs there.
///
/// The room is left uninitialized (CPython allows a fresh `bytes` to be written before it is
/// shared), and a large one asks for transparent huge pages
/// ([`proxystore::connector::advise_huge_pages`]), as the core's own buffers do.
pub(crate) struct PyBytesMemory {
    bytes: Option<Py<PyBytes>>,
    data: *mut MaybeUninit<u8>,
    len: usize,
}

// SAFETY: `data` points into the storage of the `bytes` object held in `bytes` (or is dangling
// with `len` 0), which moves with it; a `Py` may be sent between threads, and the storage is
// reached only through `&mut self`.
unsafe impl Send for PyBytesMemory {}

impl Default for PyBytesMemory {
    fn default() -> Self {
        PyBytesMemory {
            bytes: None,
            data: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
        }
    }
}

impl ObjectMemory for PyBytesMemory {
    fn allocate(&mut self, len: usize) -> proxystore::Result<()> {
        let too_large = |why: String| proxystore::Error::LimitExceeded {
            message: format!("a bytes object of {len} bytes: {why}"),
        };
        let size = ffi::Py_ssize_t::try_from(len).map_err(|_| too_large("too large".into()))?;
        let (bytes, data) = Python::attach(|py| {
            self.bytes = None;
            self.len = 0;
            // SAFETY: the GIL is held; a NULL source makes a new object of `size` bytes left
            // uninitialized, or NULL with MemoryError set.
            let made = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
            // SAFETY: `made` is a new (owned) reference, or NULL with an error set.
            let bytes = unsafe { Bound::from_owned_ptr_or_err(py, made) }
                .map_err(|e| too_large(e.to_string()))?;
            // SAFETY: `made` is a bytes object (just made); its storage holds `size` bytes.
            let data = unsafe { ffi::PyBytes_AsString(made) };
            // SAFETY: `made` is a bytes object.
            let bytes: Bound<'_, PyBytes> = unsafe { bytes.cast_into_unchecked() };
            Ok::<_, proxystore::Error>((bytes.unbind(), data))
        })?;
        self.bytes = Some(bytes);
        self.data = data.cast();
        self.len = len;
        proxystore::connector::advise_huge_pages(self.room());
        Ok(())
    }

    fn room(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `data..data + len` is the storage of the `bytes` object in `self.bytes` (or
        // `len` is 0). That object was made here and is not shared until `finish`, so no other
        // code reads or writes it, with or without the GIL; `&mut self` makes this borrow the
        // only one; `MaybeUninit` bytes need no initialization.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

impl PyBytesMemory {
    /// The `bytes` object, once the sink over this memory completed `written` bytes: that must
    /// be its whole length, or its content would be partly unwritten.
    pub(crate) fn finish(self, py: Python<'_>, written: u64) -> PyResult<Bound<'_, PyBytes>> {
        match self.bytes {
            Some(bytes) if written == self.len as u64 => Ok(bytes.into_bound(py)),
            _ => Err(crate::errors::to_py(
                py,
                proxystore::Error::backend_message(
                    "get_into",
                    format!("{written} bytes written into a room of {}", self.len),
                    false,
                ),
            )),
        }
    }
}
