"""deepwml_listen: a DICOM node that receives studies, predicts each once it is complete and sends the results back."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, add_mask_options, add_version_argument, report_native_crashes, run

OUTPUTS = ("seg", "findings", "sr")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_listen."""
    p = argparse.ArgumentParser(
        prog="deepwml_listen",
        description=(
            "Run DeepWML as a DICOM node: a PACS or scanner sends studies to it (C-STORE); each study is predicted "
            "once no instance of it has arrived for --stable-seconds (the FLAIR is chosen among its series as "
            "deepwml_predict does), and DeepWML's DICOM objects (SEG, findings picture, SR) are written to "
            "FOLDER/studies/STUDY_UID/ and, with --send-to, sent back by C-STORE. FOLDER/studies.csv lists every "
            "study and its outcome, FOLDER/node.log every event. Stopping (Ctrl-C, SIGTERM) and starting again "
            "neither repeats nor forgets work. Needs pynetdicom and highdicom (pip install 'deepwml[dicom]')."
        ),
    )
    p.add_argument("folder", type=Path, help="the node's folder (made if missing): received studies, results, records")
    p.add_argument("--aet", default="DEEPWML", help="this node's AE title, as the PACS knows it (default DEEPWML)")
    p.add_argument("--port", type=int, default=11112, help="TCP port to listen on (default 11112; 0: any free port)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    p.add_argument("--allow-aet", nargs="+", default=[], metavar="AET",
                   help="accept associations only from these calling AE titles (default: any caller that addresses "
                   "this node's AE title)")
    p.add_argument("--send-to", nargs="+", default=[], metavar="AET@HOST:PORT",
                   help="send each study's results to these nodes, e.g. PACS@10.0.0.5:104; a node that is down is "
                   "tried again later (default: results stay in the folder)")
    p.add_argument("--compare-prior", action="store_true",
                   help="also compare each study with the same patient's latest earlier study (by Patient ID and study "
                   "date) that the node predicted, as deepwml_compare does: new, enlarging and resolved lesions, "
                   "with the change's DICOM objects sent beside the study's")
    p.add_argument("--fetch-prior", metavar="AET@HOST:PORT",
                   help="with --compare-prior: when the node has no earlier study of the patient, ask this PACS "
                   "(query/retrieve SCP) for the latest earlier MR study (C-FIND) and have it sent here (C-MOVE to --aet, "
                   "which the PACS must know, or C-GET with --retrieve get); it is predicted (its own results not sent) "
                   "and the new study compared with it")
    p.add_argument("--retrieve", choices=("move", "get"), default="move",
                   help="with --fetch-prior: how the prior study comes here: 'move' (C-MOVE to --aet; the PACS must have "
                   "this node's AE title, host and port as a move destination) or 'get' (C-GET: on the node's own "
                   "association, nothing to register at the PACS; MR images only) (default: move)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM",
                   help="listen over TLS with this certificate (DICOM's secure transport; give --tls-key too)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--tls-ca", type=Path, metavar="PEM",
                   help="accept only callers whose certificate this CA signed (mutual TLS); with --send-tls, also the CA "
                   "the destinations' certificates must chain to")
    p.add_argument("--send-tls", action="store_true",
                   help="send to --send-to over TLS (destinations checked against --tls-ca or the system's CAs; "
                   "--tls-cert shown to them)")
    p.add_argument("--stable-seconds", type=float, default=30.0,
                   help="predict a study once nothing of it has arrived for this long (default 30)")
    p.add_argument("--retry-seconds", type=float, default=60.0,
                   help="first wait before sending again to a node that was down, doubled each time up to an hour (default 60)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the other node at each step (default 30)")
    p.add_argument("--delete-received", action="store_true",
                   help="remove a study's received images once its results are written and delivered (failed studies are kept)")
    p.add_argument("--min-free-gb", type=float, default=1.0,
                   help="refuse instances (out of resources) while the disk has less free space than this (default 1)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="stop once every study received is predicted and nothing has arrived for this long (for a "
                   "scripted run); default: run until stopped")
    p.add_argument("-m", "--model", default=None,
                   help="the lesion model's PLAN folder or 'builtin' (default: the model shipped with DeepWML)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of each fold (default: best)")
    add_device_argument(p)
    p.add_argument("--outputs", nargs="+", choices=OUTPUTS, default=list(OUTPUTS),
                   help="the DICOM objects written per study (default: all): seg (DICOM SEG), findings (Secondary Capture "
                   "of the findings over the outlined slices), sr (Structured Report, TID 1500)")
    p.add_argument("--report", nargs="?", const="html", choices=("html", "pdf"), default=None,
                   help="also write each study's patient report (report/STUDY.html; 'pdf' also a PDF)")
    p.add_argument("--series", default=None, metavar="NAME_PATTERN",
                   help="the series to read in every study: a pattern its description, protocol or sequence name matches "
                   "(default: the FLAIR chosen as deepwml_predict chooses it)")
    add_mask_options(p)
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    from deepwml.delivery.dicom_node import DicomNode, NodeConfig, StudyWork, destinations, listen
    from deepwml.delivery.dicom_store import Destination

    _check(args)
    tls, send_tls = _tls(args)
    request = _request(args)
    config = NodeConfig(folder=args.folder, ae_title=args.aet, port=args.port, bind=args.bind,
                        allowed_callers=tuple(args.allow_aet), stable_seconds=args.stable_seconds,
                        send_to=destinations(args.send_to), retry_seconds=args.retry_seconds, timeout=args.timeout,
                        delete_received=args.delete_received, min_free_bytes=int(args.min_free_gb * 2**30),
                        compare_prior=args.compare_prior, tls=tls, send_tls=send_tls,
                        fetch_prior_from=Destination.parse(args.fetch_prior, "--fetch-prior") if args.fetch_prior else None,
                        retrieve=args.retrieve)
    node = DicomNode(config, StudyWork(request), echo=lambda line: print(line, flush=True))
    stopping = []

    def on_signal(signum, frame):  # noqa: ARG001 - the signal handler's signature
        if stopping:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, even mid-prediction (its study is redone on start)
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        node.start()
        listen(node, stop=lambda: bool(stopping), exit_when_idle=args.exit_when_idle)
    finally:
        node.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    node.log("stopped" + (" (idle)" if not stopping else ""))
    return 0


def _check(args: argparse.Namespace) -> None:
    """Numbers, port, extras and option combinations, before anything is read or started."""
    import math

    from deepwml.utils.errors import DeepWMLError

    for flag, value, least in (("--stable-seconds", args.stable_seconds, 0), ("--min-free-gb", args.min_free_gb, 0),
                               ("--exit-when-idle", args.exit_when_idle, 0), ("--retry-seconds", args.retry_seconds, None),
                               ("--timeout", args.timeout, None)):
        if value is not None and not (math.isfinite(value) and (value >= 0 if least == 0 else value > 0)):
            raise DeepWMLError(f"{flag} must be a {'non-negative' if least == 0 else 'positive'} number, not {value}")
    if not 0 <= args.port <= 65535:
        raise DeepWMLError(f"--port {args.port} is not 0-65535")
    for module, extra in (("pynetdicom", "receive and send DICOM"), ("highdicom", "write DICOM SEG, findings and SR")):
        try:
            __import__(module)
        except ImportError:
            raise DeepWMLError(f"deepwml_listen needs {module} to {extra}: pip install 'deepwml[dicom]'") from None
    if args.tls_ca is not None and args.tls_cert is None and not args.send_tls:
        raise DeepWMLError("--tls-ca needs --tls-cert and --tls-key (to listen over TLS) or --send-tls")
    if args.send_tls and not (args.send_to or args.fetch_prior):
        raise DeepWMLError("--send-tls needs --send-to or --fetch-prior")
    if args.fetch_prior and not args.compare_prior:
        raise DeepWMLError("--fetch-prior fetches studies to compare with: give --compare-prior too")
    if args.retrieve != "move" and not args.fetch_prior:
        raise DeepWMLError("--retrieve says how --fetch-prior retrieves a study: give --fetch-prior too")


def _tls(args: argparse.Namespace) -> tuple:
    """(TLS files to listen with, TLS files to call with), each None for plain DICOM; files that cannot be used
    stop the node before it starts."""
    from deepwml.delivery.dicom_store import TlsFiles

    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca) if (args.tls_cert or args.tls_key) else None
    send_tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca) if args.send_tls else None
    if tls is not None:
        tls.server_context()
    if send_tls is not None:
        send_tls.client_context()
    return tls, send_tls


def _request(args):
    """The prediction asked for every study, with the model checked now rather than at the first study."""
    import math

    from deepwml.inference.lesion_report import check_lesion_filters
    from deepwml.inference.model_loading import check_model
    from deepwml.inference.run import PredictRequest, model_dir_of
    from deepwml.utils.errors import DeepWMLError

    request = PredictRequest(input=Path("."), output=Path("."), model_dir=Path(args.model) if args.model else None,
                             checkpoint=args.checkpoint, device=args.device, series_uid=args.series,
                             workers=1, dicom_seg="seg" in args.outputs, dicom_findings="findings" in args.outputs,
                             dicom_sr="sr" in args.outputs, report=args.report, anatomy=not args.no_anatomy,
                             white_matter_only=args.white_matter_only, skull_strip=args.skull_strip,
                             keep_outside_brain=args.keep_outside_brain, min_cortex_contrast=args.min_cortex_contrast,
                             threshold=args.threshold,
                             min_lesion_ml=args.min_lesion_ml, min_lesion_peak=args.min_lesion_peak,
                             min_lesion_contrast=args.min_lesion_contrast, min_lesion_spread=args.min_lesion_spread,
                             thin_slab_mm=args.thin_slab_mm,
                             postprocessing=not args.no_postprocessing, tta=args.tta)
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0 < args.threshold < 1):
        raise DeepWMLError(f"--threshold must lie strictly between 0 and 1, not {args.threshold}")
    check_lesion_filters(args.min_lesion_ml or 0.0, args.min_lesion_peak or 0.0, args.min_lesion_contrast or 0.0,
                         args.min_lesion_spread or 0.0)
    spec = check_model(model_dir_of(request), checkpoint=args.checkpoint)
    if spec.plan.network.num_classes > 2:
        raise DeepWMLError("is a label-map model; deepwml_listen needs a lesion model", spec.folder)
    return request


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command."""
    report_native_crashes()
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
