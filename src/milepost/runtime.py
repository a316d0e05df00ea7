"""Everything one Milepost process runs, wired together once: catalog, store, writer, services."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

import duckdb

from milepost.audiences.engine import AudienceEngine, EngineSettings
from milepost.audiences.estimator import Estimator
from milepost.audiences.evaluations import Evaluations
from milepost.catalog import Catalog
from milepost.catalog.output_rows import use_key_file
from milepost.clock import DAY_MS, Clock, SystemClock
from milepost.config import Config
from milepost.engines.base import open_calculator, open_sample_source
from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.auth import InputDirectory
from milepost.ingest.plan import DedupeWindows
from milepost.ingest.ratelimit import RateLimiter
from milepost.ingest.service import IngestService
from milepost.ingest.writer import IngestWriter
from milepost.journeys.service import JourneyService
from milepost.journeys.views import JourneyViews
from milepost.outputs.delivery import DeliveryRunner
from milepost.priority import named_thread, timed

log = logging.getLogger(__name__)

SAMPLE_REFRESH_S = 5.0  # the sample is refreshed in the background at most this often ...
# ... and at least this many times its last refresh's duration apart, so that under heavy ingest
# (when a refresh re-copies most of the sample) it takes a bounded share of the CPU. Estimates
# refresh it themselves when they need it.
SAMPLE_REFRESH_SPACING = 10.0
CHECKPOINT_LOOK_S = 0.5  # how often the WAL size is looked at (it grows ~25 MB/s at 20,000 events/s)


def refresh_wait(last_refresh_s: float) -> float:
    """Seconds until the next background refresh of the sample, after one that took `last_refresh_s`."""
    return max(SAMPLE_REFRESH_S, SAMPLE_REFRESH_SPACING * last_refresh_s)


@dataclass
class Runtime:
    config: Config
    clock: Clock
    catalog: Catalog
    store: DuckDBStore
    writer: IngestWriter
    inputs: InputDirectory
    ingest: IngestService
    audiences: AudienceEngine
    journeys: JourneyService
    views: JourneyViews
    delivery: DeliveryRunner
    evaluations: Evaluations = field(default_factory=Evaluations)

    @classmethod
    def open(cls, config: Config, clock: Clock | None = None, *, seed: int | None = None) -> Runtime:
        clock = clock or SystemClock()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        use_key_file(config.data_dir)  # output credentials are encrypted with the data directory's key
        catalog = Catalog(config.catalog_url, clock)
        try:
            store = DuckDBStore(config.store_dir, config.store_threads)
        except BaseException:
            catalog.close()
            raise

        def windows() -> DedupeWindows:
            s = catalog.get_settings()
            return DedupeWindows(
                request_ms=s.request_dedupe_days * DAY_MS, message_ms=s.message_dedupe_days * DAY_MS
            )

        writer = IngestWriter(store, windows, max_group_batches=config.max_group_batches, seed=seed)
        inputs = InputDirectory(catalog)
        limiter = RateLimiter(config.input_rate_per_s, config.input_burst, clock)
        ingest = IngestService(
            inputs,
            writer,
            limiter,
            clock,
            max_request_bytes=config.max_request_bytes,
            max_bulk_batches=config.max_bulk_batches,
        )
        s = catalog.get_settings()
        calculator = open_calculator(config)
        engine = AudienceEngine(
            store.connect(),
            clock,
            EngineSettings(s.lookback_days * DAY_MS, s.effective_profile_lifetime_days * DAY_MS),
            calculator=calculator,
        )
        journeys = JourneyService(catalog, engine, clock.now_ms)
        journeys.load()
        estimator = Estimator(store.connect())
        estimator.sample.source = open_sample_source(calculator)  # its rebuilds scan on that engine
        views = JourneyViews(journeys, store, estimator)

        def settled(audience_id: int) -> bool:  # calculated, and its first full calculation done
            return audience_id in journeys.calculated and audience_id not in journeys.pending

        delivery = DeliveryRunner(catalog, store, settled, clock)
        return cls(config, clock, catalog, store, writer, inputs, ingest, engine, journeys, views, delivery)

    def start(self, *, background: bool = True) -> None:
        """Start the writer; with `background`, also upkeep and real-time evaluation threads."""
        self.writer.start()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.journeys.deferred = background
        if not background:
            self.journeys.settle()
            return
        self.writer.listeners.append(lambda _plan: self._wake.set())
        self._maintenance = named_thread(self._maintain, "milepost-maintenance")
        self._maintenance.start()
        self._evaluator = named_thread(self._evaluate, "milepost-evaluator")
        self._evaluator.start()
        self._sampler = named_thread(self._refresh_sample, "milepost-sample")
        self._sampler.start()
        self._checkpointer = named_thread(self._checkpoint, "milepost-checkpoint")
        self._checkpointer.start()
        self.delivery.start()

    def _refresh_sample(self) -> None:
        """Keep the estimator's sample current, off the evaluator's thread, while estimates are asked
        for (the first one after a quiet spell waits for it to catch up)."""
        estimator = self.views.estimator
        while True:
            refreshed = False
            try:
                if estimator.wants_refresh():
                    estimator.refresh()
                    refreshed = True
            except Exception:
                log.exception("refreshing the estimator's sample failed")
            if self._stop.wait(refresh_wait(estimator.cycle_s) if refreshed else SAMPLE_REFRESH_S):
                return

    def _checkpoint(self) -> None:
        """Checkpoint the store beside the writer, before a group commit would have to."""
        con = self.store.connect()
        try:
            while not self._stop.wait(CHECKPOINT_LOOK_S):
                try:
                    self.store.checkpoint_ahead(con)
                except Exception:
                    log.exception("checkpointing the store failed")
        finally:
            con.close()

    def _evaluate(self) -> None:
        """Real time: evaluate users of new batches as they commit, and users whose timers are due."""
        while not self._stop.is_set():
            failed = False
            try:
                # First calculations (after start-up: recovery too), one part at a time.
                settled, spent = timed(self.journeys.settle_part)
                self.evaluations.note(settled, self.clock.now_ms(), spent)  # committed by now
                # New batches and due timers, in one evaluation.
                result, spent = timed(self.audiences.realtime)
                self.evaluations.note(result, self.clock.now_ms(), spent)
                if result.adds or result.removes or settled.adds or settled.removes:
                    self.delivery.notify()  # the outbox grew: deliver without waiting for a poll
            except Exception:
                log.exception("audience evaluation failed")
                failed = True
            if failed or not self.journeys.settling:  # parts of a calculation follow each other at once
                self._wake.wait(0.2)
            self._wake.clear()

    def _maintain(self) -> None:
        """Upkeep: copy new events to Parquet segments (for Spark); hourly, forget expired de-duplication keys."""
        # A segment is written on this connection, beside the writer, and recorded on the writer.
        con = self.store.connect()
        try:
            ticks = 0
            while not self._stop.wait(60):
                ticks += 1
                self._seal(con)
                if ticks % 60 == 0:
                    self._purge()
        finally:
            con.close()

    def _seal(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            segment = self.store.write_segment(con)
            if segment is not None and not self._stop.is_set():  # else left for the orphan sweep
                self.writer.run_exclusive(functools.partial(self.store.record_segment, segment))
        except Exception:
            log.exception("sealing events failed")

    def _purge(self) -> None:
        try:
            s = self.catalog.get_settings()
            now = self.clock.now_ms()
            request_before = now - s.request_dedupe_days * DAY_MS
            message_before = now - s.message_dedupe_days * DAY_MS
            self.writer.run_exclusive(
                functools.partial(self.store.purge_dedupe_keys, request_before, message_before)
            )
        except Exception:
            log.exception("maintenance failed")

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self._wake.set()
            if hasattr(self, "_maintenance"):
                self._maintenance.join(30)  # a segment being written is finished (left unrecorded) first
            self.writer.stop()
            if hasattr(self, "_evaluator"):
                self._evaluator.join(30)
                self._sampler.join(30)
                self._checkpointer.join(30)
        self.delivery.close()
        self.views.estimator.close()
        self.store.close()
        self.catalog.close()
