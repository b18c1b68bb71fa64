"""Ask a PACS for a patient's earlier studies (C-FIND) and have it send one to a DICOM node (C-MOVE), or fetch it
on the asking association (C-GET), as a node does to compare a new study with the prior exam it has not seen (study
root query/retrieve, STUDY level)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from deepwml.delivery.dicom_store import Destination, TlsFiles, application_entity, associate
from deepwml.utils.errors import DeepWMLError

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: what a C-GET takes back (the SOP classes it offers to store, as SCP of the sub-operations): the MR images a FLAIR
#: comes in; anything else of the study (reports, CT, DeepWML's own objects) is declined by the PACS as a failed
#: sub-operation, not stored
MR_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
)
#: C-FIND / C-MOVE statuses: pending (a match, or sub-operations going on), and success
PENDING, SUCCESS = (0xFF00, 0xFF01), 0x0000


@dataclass(frozen=True)
class FoundStudy:
    """One study a PACS holds for the patient."""

    study_uid: str
    study_date: str
    modalities: str
    description: str


def earlier_studies(source: Destination, calling_ae: str, patient_id: str, before: str, timeout: float = 30.0,
                    tls: Optional[TlsFiles] = None) -> List[FoundStudy]:
    """The patient's MR studies the PACS holds dated before ``before`` (YYYYMMDD), latest first (C-FIND)."""
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.StudyDate = f"-{before}"  # a range up to the date, inclusive: the same day is filtered out below
    query.StudyInstanceUID = ""
    query.ModalitiesInStudy = ""
    query.StudyDescription = ""
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = associate(ae, source, tls)
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in PENDING and identifier is not None:
                date = str(identifier.get("StudyDate", "") or "")
                value = identifier.get("ModalitiesInStudy") or []
                modalities = "\\".join(str(m) for m in ([value] if isinstance(value, str) else value))
                # a PACS may ignore the modality or date key: what comes back is checked here
                if date and date < before and (not modalities or "MR" in modalities.split("\\")) \
                        and identifier.get("PatientID", patient_id) == patient_id:
                    found.append(FoundStudy(str(identifier.StudyInstanceUID), date, modalities,
                                            str(identifier.get("StudyDescription", "") or "")))
            elif code != SUCCESS:
                raise DeepWMLError(f"{source} answered the query with status "
                                   + (f"0x{code:04X}" if code >= 0 else "none (timeout or connection lost)"))
    finally:
        assoc.release()
    return sorted(found, key=lambda s: s.study_date, reverse=True)


def move_study(source: Destination, calling_ae: str, study_uid: str, destination_ae: str, timeout: float = 30.0,
               tls: Optional[TlsFiles] = None) -> int:
    """Have the PACS send a study to the node whose AE title is ``destination_ae`` (C-MOVE; the PACS must know that
    AE title's address); returns the number of instances it sent, or raises with why not."""
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = associate(ae, source, tls)
    try:
        completed, failed, code = _sub_operations(assoc.send_c_move(query, destination_ae, STUDY_ROOT_MOVE))
    finally:
        assoc.release()
    if code == -1:
        raise DeepWMLError(f"{source} did not finish sending study {study_uid} (timeout or connection lost)")
    if code == 0xA801:
        raise DeepWMLError(f"{source} does not know the move destination {destination_ae!r}: add this node's AE title, "
                           "host and port to the PACS")
    if code not in (SUCCESS, 0xB000) or completed == 0:
        raise DeepWMLError(f"{source} sent {completed} instance(s) of study {study_uid}, {failed} failed "
                           f"(C-MOVE status 0x{code:04X})")
    return completed


def get_study(source: Destination, calling_ae: str, study_uid: str, on_store: Callable, timeout: float = 30.0,
              tls: Optional[TlsFiles] = None) -> int:
    """Fetch a study's MR images on this association (C-GET: the PACS needs to know nothing of this side's address);
    each arrives as a C-STORE handed to ``on_store`` (a pynetdicom EVT_C_STORE handler, returning its status).
    Returns the number of instances received, or raises with why none were."""
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(STUDY_ROOT_GET)
    # proposed too, though unused: a PACS without C-GET then still accepts the association, and is told apart below
    ae.add_requested_context(STUDY_ROOT_FIND)
    for sop_class in MR_STORAGE:
        ae.add_requested_context(sop_class)
    roles = [build_role(sop_class, scp_role=True) for sop_class in MR_STORAGE]
    assoc = associate(ae, source, tls, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        if not any(c.abstract_syntax == STUDY_ROOT_GET for c in assoc.accepted_contexts):
            raise DeepWMLError(f"{source} does not offer study root C-GET: retrieve by C-MOVE instead (--retrieve move)")
        completed, failed, code = _sub_operations(assoc.send_c_get(query, STUDY_ROOT_GET))
    finally:
        assoc.release()
    if code == -1:
        raise DeepWMLError(f"{source} did not finish sending study {study_uid} (timeout or connection lost)")
    if code not in (SUCCESS, 0xB000) or completed == 0:
        raise DeepWMLError(f"{source} sent {completed} MR instance(s) of study {study_uid}, {failed} failed or declined "
                           f"(C-GET status 0x{code:04X})")
    return completed


def _sub_operations(responses) -> Tuple[int, int, int]:
    """(completed, failed, last status) of a C-MOVE's or C-GET's responses; status -1 when they stopped without one
    (a timeout or a lost connection)."""
    completed, failed, code = 0, 0, -1
    for status, _ in responses:
        if not status:
            return completed, failed, -1
        code = int(status.Status)
        completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
        failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
    return completed, failed, code
