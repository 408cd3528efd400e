//! MPI ranks (the `mpi` cargo feature): the [`Exchange`] of a run started by
//! `mpiexec -n R cllm run SPEC`, over the system's MPI (MPICH or Open MPI) through the
//! `mpi` crate. A step needs two collectives: all-to-all and all-gather.

use std::ffi::c_int;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use mpi::environment::Universe;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};

use crate::machine::Exchange;

/// The largest all-gather sent in one call (MPI counts are 32-bit).
const CALL_BYTES: usize = 1 << 30;

/// `MPI_COMM_WORLD` of this process; MPI is finalized when the last handle drops.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    ranks: usize,
    /// The requests of the part-by-part all-to-all in flight.
    pieces: Mutex<Vec<ffi::MPI_Request>>,
    /// The point-to-point sends in flight (pipeline stages).
    sends: Mutex<Vec<ffi::MPI_Request>>,
    /// MPI itself, held by `MPI_COMM_WORLD`'s handle (finalized when it drops); a
    /// split's handle holds none and must drop first (the machine holding it does, at
    /// the end of the run, before `main` drops the world's).
    _universe: Option<Universe>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MPI rank {} of {}", self.rank, self.ranks)
    }
}

// SAFETY: MPI is initialised with `Threading::Multiple` (checked in `start`), so any
// thread may call it; the trainer makes its calls from one thread at a time anyway.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

/// MPI, when this process was started by an MPI launcher (`mpiexec`, `srun`): the
/// launchers set one of these variables. A plain `cllm run` never initialises MPI.
pub fn start() -> Result<Option<Arc<Mpi>>, String> {
    const LAUNCHED: [&str; 4] = ["PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"];
    if !LAUNCHED.iter().any(|v| std::env::var_os(v).is_some()) {
        return Ok(None);
    }
    let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
        .ok_or("MPI was initialised twice")?;
    if threading != mpi::Threading::Multiple {
        return Err(format!(
            "this MPI library offers {threading:?} threading; cllm needs Multiple"
        ));
    }
    let world = universe.world();
    let (rank, ranks) = (world.rank() as usize, world.size() as usize);
    Ok(Some(Arc::new(Mpi {
        world,
        rank,
        ranks,
        pieces: Mutex::new(Vec::new()),
        sends: Mutex::new(Vec::new()),
        _universe: Some(universe),
    })))
}

impl Exchange for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) {
        let piece = send.len() / self.ranks;
        if piece <= CALL_BYTES {
            self.world.all_to_all_into(send, recv);
            return;
        }
        // Past MPI's 32-bit counts: each piece in parts, exchanged then put in place.
        let (mut out, mut back) = (
            vec![0u8; self.ranks * CALL_BYTES],
            vec![0u8; self.ranks * CALL_BYTES],
        );
        for start in (0..piece).step_by(CALL_BYTES) {
            let n = CALL_BYTES.min(piece - start);
            for r in 0..self.ranks {
                out[r * n..][..n].copy_from_slice(&send[r * piece + start..][..n]);
            }
            self.world
                .all_to_all_into(&out[..self.ranks * n], &mut back[..self.ranks * n]);
            for r in 0..self.ranks {
                recv[r * piece + start..][..n].copy_from_slice(&back[r * n..][..n]);
            }
        }
    }

    unsafe fn open_pieces(&self, recv: *mut u8, piece: usize, parts: &[Range<usize>]) {
        let mut pieces = self.pieces.lock().expect("no thread panicked in MPI");
        for from in (0..self.ranks).filter(|&r| r != self.rank) {
            for (tag, part) in parts.iter().enumerate() {
                // SAFETY: the caller's contract: this part of piece `from` is ours.
                unsafe {
                    let at = recv.add(from * piece + part.start);
                    self.irecv(&mut pieces, from, tag, at, part.len())
                };
            }
        }
    }

    unsafe fn send_part(&self, to: usize, tag: usize, send: *const u8, len: usize) {
        let mut pieces = self.pieces.lock().expect("no thread panicked in MPI");
        // SAFETY: the caller's contract: `len` bytes at `send`, untouched until closed.
        unsafe { self.isend(&mut pieces, to, tag, send, len) };
    }

    fn progress(&self) {
        let mut requests = self.pieces.lock().expect("no thread panicked in MPI");
        let mut done: c_int = 0;
        // SAFETY: the requests are this exchange's own, live until completed.
        unsafe {
            ffi::MPI_Testall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                &mut done,
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        if done != 0 {
            requests.clear();
        }
    }

    fn close_pieces(&self) {
        let mut requests = self.pieces.lock().expect("no thread panicked in MPI");
        // SAFETY: as above.
        unsafe {
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        requests.clear();
    }

    fn all_gather(&self, send: &[u8], recv: &mut [u8]) {
        let len = send.len();
        if len <= CALL_BYTES {
            self.world.all_gather_into(send, recv);
            return;
        }
        // Past MPI's 32-bit counts: in pieces, each gathered then put in place.
        let mut piece = vec![0u8; self.ranks * CALL_BYTES];
        for start in (0..len).step_by(CALL_BYTES) {
            let n = CALL_BYTES.min(len - start);
            self.world
                .all_gather_into(&send[start..start + n], &mut piece[..self.ranks * n]);
            for r in 0..self.ranks {
                recv[r * len + start..][..n].copy_from_slice(&piece[r * n..][..n]);
            }
        }
    }

    unsafe fn post_send(&self, to: usize, tag: usize, send: *const u8, len: usize) {
        let mut sends = self.sends.lock().expect("no thread panicked in MPI");
        // SAFETY: the caller's contract: `len` bytes at `send`, untouched until
        // `finish_sends`.
        unsafe { self.isend(&mut sends, to, tag, send, len) };
    }

    fn recv(&self, from: usize, tag: usize, recv: &mut [u8]) {
        if recv.len() <= CALL_BYTES {
            // SAFETY: `recv` is ours for the call.
            unsafe {
                ffi::MPI_Recv(
                    recv.as_mut_ptr().cast(),
                    recv.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    from as c_int,
                    tag as c_int,
                    self.world.as_raw(),
                    ffi::RSMPI_STATUS_IGNORE,
                )
            };
            return;
        }
        let mut requests = Vec::new();
        // SAFETY: `recv` is ours until the wait below.
        unsafe { self.irecv(&mut requests, from, tag, recv.as_mut_ptr(), recv.len()) };
        // SAFETY: the requests just made, completed here.
        unsafe {
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
    }

    fn split(&self, color: usize, key: usize) -> Arc<dyn Exchange> {
        use mpi::topology::Color;
        let color = Color::with_value(color as c_int);
        let world = (self.world)
            .split_by_color_with_key(color, key as c_int)
            .expect("every rank gave a color");
        let (rank, ranks) = (world.rank() as usize, world.size() as usize);
        Arc::new(Mpi {
            world,
            rank,
            ranks,
            pieces: Mutex::new(Vec::new()),
            sends: Mutex::new(Vec::new()),
            _universe: None,
        })
    }

    fn finish_sends(&self) {
        let mut requests = self.sends.lock().expect("no thread panicked in MPI");
        // SAFETY: the requests are this exchange's own, live until completed.
        unsafe {
            ffi::MPI_Waitall(
                requests.len() as c_int,
                requests.as_mut_ptr(),
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        requests.clear();
    }
}

impl Mpi {
    /// Starts sending `len` bytes at `send` to `to` under `tag` (nonblocking, in calls
    /// of at most CALL_BYTES); the requests go on `requests`.
    ///
    /// # Safety
    /// The bytes stay valid and untouched until the requests complete.
    unsafe fn isend(
        &self,
        requests: &mut Vec<ffi::MPI_Request>,
        to: usize,
        tag: usize,
        send: *const u8,
        len: usize,
    ) {
        self.parts(len, requests, |start, n, request| unsafe {
            // SAFETY: forwarded to the caller.
            ffi::MPI_Isend(
                send.add(start).cast(),
                n,
                ffi::RSMPI_UINT8_T,
                to as c_int,
                tag as c_int,
                self.world.as_raw(),
                request,
            )
        });
    }

    /// Starts receiving `len` bytes into `recv` from `from` under `tag` (nonblocking, in
    /// calls of at most CALL_BYTES); the requests go on `requests`.
    ///
    /// # Safety
    /// The bytes stay valid and untouched by anyone else until the requests complete.
    unsafe fn irecv(
        &self,
        requests: &mut Vec<ffi::MPI_Request>,
        from: usize,
        tag: usize,
        recv: *mut u8,
        len: usize,
    ) {
        self.parts(len, requests, |start, n, request| unsafe {
            // SAFETY: forwarded to the caller.
            ffi::MPI_Irecv(
                recv.add(start).cast(),
                n,
                ffi::RSMPI_UINT8_T,
                from as c_int,
                tag as c_int,
                self.world.as_raw(),
                request,
            )
        });
    }

    /// Starts the nonblocking transfers of `len` bytes, in calls of at most CALL_BYTES
    /// (MPI counts are 32-bit; one tag's messages match in order): `start(offset,
    /// bytes, request)`; the requests go on `requests`.
    fn parts(
        &self,
        len: usize,
        requests: &mut Vec<ffi::MPI_Request>,
        start: impl Fn(usize, c_int, *mut ffi::MPI_Request) -> c_int,
    ) {
        for offset in (0..len).step_by(CALL_BYTES) {
            let n = CALL_BYTES.min(len - offset);
            // SAFETY: a request handle is plain data; MPI overwrites it.
            let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
            start(offset, n as c_int, &mut request);
            requests.push(request);
        }
    }
}
