//! De-identification (PS3.15 Annex E): a study's instances rewritten by the
//! Basic Application Level Confidentiality Profile and the chosen options
//! (`custos_core::deid` decides per attribute from Table E.1-1), either kept
//! in the archive as a new study (`deidentify_study`) or handed out one file
//! at a time for a download (`deidentified`). UIDs, pseudonyms and date
//! shifts come from the data folder's key (`deid.key`) and a project name,
//! so a study de-identified twice for one project gives the same result and
//! its references to other de-identified studies still hold. Private
//! attributes go unless configured safe; an instance flagged with burned-in
//! annotation (BurnedInAnnotation = YES) stops the whole study unless forced,
//! since the profile cannot clean pixels. Audited as Export (110106) with
//! both the original and the new patient and study.

use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::deid::{self, Act, DeidKey, Options, ProjectKey};
use custos_core::record::StoredInstance;
use custos_index::IndexError;

use crate::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::{Archive, IngestError, RetrieveError};

/// The key's file in the data folder.
pub const KEY_FILE: &str = "deid.key";

/// Reads the data folder's de-identification key, or makes one (0600).
/// Several nodes sharing an index need the same file to give the same UIDs.
pub fn load_key(dir: &Path) -> std::io::Result<DeidKey> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => DeidKey::from_hex(&text).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} is not a de-identification key (64 hexadecimal digits)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DeidKey::generate();
            crate::audit::write_key(&path, &key.to_hex())?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// A private attribute configured as safe to keep: its group, its element
/// within the block (the low byte) and the block's private creator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePrivate {
    pub group: u16,
    pub element: u8,
    pub creator: String,
}

impl std::str::FromStr for SafePrivate {
    type Err = String;
    /// `gggg,xxee CREATOR`, e.g. `0043,xx39 GEMS_PARM_01`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: a safe private attribute is `gggg,xxee CREATOR`, gggg odd");
        let (tag, creator) = s.trim().split_once(' ').ok_or_else(bad)?;
        let (g, e) = tag.split_once(',').ok_or_else(bad)?;
        let group = u16::from_str_radix(g, 16).map_err(|_| bad())?;
        let e = e.to_ascii_lowercase();
        let element = e
            .strip_prefix("xx")
            .and_then(|e| u8::from_str_radix(e, 16).ok())
            .ok_or_else(bad)?;
        let creator = creator.trim().to_string();
        if group % 2 == 0 || group < 0x0009 || creator.is_empty() {
            return Err(bad());
        }
        Ok(SafePrivate {
            group,
            element,
            creator,
        })
    }
}

/// What to make of a study.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub options: Options,
    /// Replacements stay consistent within a project ("default" if empty).
    pub project: String,
    /// The new study's description (otherwise the profile's action).
    pub study_description: Option<String>,
    /// The new patient ID and name (otherwise pseudonyms from the key).
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    /// Go on although instances carry burned-in annotation.
    pub force: bool,
}

impl Request {
    /// Checks what a user gave: values within their VR's length, no
    /// backslash or control characters, a short project name.
    pub fn check(&self) -> Result<(), DeidError> {
        let fits = |v: &Option<String>, max: usize, what: &str| match v {
            Some(v)
                if v.chars().count() > max || v.chars().any(|c| c.is_control() || c == '\\') =>
            {
                Err(DeidError::Invalid(format!(
                    "{what}: at most {max} characters, without backslash or control characters"
                )))
            }
            _ => Ok(()),
        };
        fits(&self.study_description, 64, "the study description")?;
        fits(&self.patient_id, 64, "the patient ID")?;
        fits(&self.patient_name, 64, "the patient name")?;
        fits(&Some(self.project.clone()), 64, "the project")?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such study")]
    NotFound,
    #[error(
        "{0} instance(s) of the study have burned-in annotation (BurnedInAnnotation = YES), which de-identification does not remove; force it to go on"
    )]
    BurnedIn(usize),
    #[error("de-identification is not set up (no key)")]
    NoKey,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading a stored instance: {0}")]
    Read(#[from] RetrieveError),
    #[error("storing the de-identified copy: {0}")]
    Store(#[from] IngestError),
    #[error("writing a de-identified instance: {0}")]
    Write(String),
    #[error(transparent)]
    Trail(#[from] crate::audit::TrailUnavailable),
}

/// What a de-identified study is now called.
#[derive(Debug, Clone)]
pub struct Deidentified {
    pub study_uid: String,
    pub patient_id: String,
    pub instances: usize,
}

/// A study being de-identified one instance at a time (for a download).
pub struct Files {
    instances: std::vec::IntoIter<StoredInstance>,
    key: ProjectKey,
    request: Request,
    pub study_uid: String,
    pub patient_id: String,
    pub count: usize,
}

impl Files {
    /// The next instance as a Part 10 file: (name in the download, bytes).
    pub async fn next(
        &mut self,
        archive: &Archive,
    ) -> Result<Option<(String, Vec<u8>)>, DeidError> {
        let Some(inst) = self.instances.next() else {
            return Ok(None);
        };
        let (series, sop, bytes) = archive
            .deidentify_instance(&inst, &self.key, &self.request)
            .await?;
        Ok(Some((format!("{series}/{sop}.dcm"), bytes)))
    }
}

impl Archive {
    /// Keys for de-identification and the private attributes safe to keep.
    pub fn set_deidentification(&self, key: DeidKey, safe_private: Vec<SafePrivate>) {
        let _ = self.deid.set((key, safe_private));
    }

    /// The study's instances, checked for burned-in annotation, and what the
    /// de-identified study and patient will be called.
    async fn deid_plan(
        &self,
        study_uid: &str,
        request: &Request,
    ) -> Result<(Vec<StoredInstance>, ProjectKey, String, String, String), DeidError> {
        request.check()?;
        let (key, _) = self.deid.get().ok_or(DeidError::NoKey)?;
        let project = if request.project.is_empty() {
            "default"
        } else {
            &request.project
        };
        let key = key.project(project);
        let instances = self
            .retrieve_set(crate::routing::whole_study(study_uid))
            .await?
            .all()
            .await?;
        let first = instances.first().ok_or(DeidError::NotFound)?;
        let mut burned = 0;
        for inst in &instances {
            let obj = self.read_object(inst, true).await?;
            if text(&obj, tags::BURNED_IN_ANNOTATION).eq_ignore_ascii_case("YES") {
                burned += 1;
            }
        }
        if burned > 0 && !request.force {
            return Err(DeidError::BurnedIn(burned));
        }
        let head = self.read_object(first, true).await?;
        let old_patient = text(&head, tags::PATIENT_ID);
        let new_patient = request.patient_id.clone().unwrap_or_else(|| {
            key.pseudonym(&text(&head, tags::ISSUER_OF_PATIENT_ID), &old_patient)
        });
        Ok((
            instances,
            key.clone(),
            old_patient,
            new_patient,
            key.uid(study_uid),
        ))
    }

    async fn deidentify_instance(
        &self,
        inst: &StoredInstance,
        key: &ProjectKey,
        request: &Request,
    ) -> Result<(String, String, Vec<u8>), DeidError> {
        let safe = self.deid.get().map(|d| d.1.as_slice()).unwrap_or_default();
        let obj = self.read_object(inst, false).await?;
        let transfer_syntax = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let mut ds = obj.into_inner();
        deidentify(&mut ds, key, request, safe);
        let sop = text(&ds, tags::SOP_INSTANCE_UID);
        let series = text(&ds, tags::SERIES_INSTANCE_UID);
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(inst.sop_class_uid.as_str())
            .media_storage_sop_instance_uid(sop.as_str())
            .transfer_syntax(transfer_syntax.as_str())
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
            .build()
            .map_err(|e| DeidError::Write(e.to_string()))?;
        let mut bytes = Vec::new();
        ds.with_exact_meta(meta)
            .write_all(&mut bytes)
            .map_err(|e| DeidError::Write(e.to_string()))?;
        Ok((series, sop, bytes))
    }

    fn audit_export(
        &self,
        by: &str,
        study: &str,
        d: &Deidentified,
        old_patient: &str,
        how: &str,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(EventId::Export, 'R', Outcome::Success);
        e.user = by.to_string();
        e.patient_ids = vec![old_patient.to_string(), d.patient_id.clone()];
        e.study_uids = vec![study.to_string(), d.study_uid.clone()];
        e.detail = format!(
            "de-identified {how}: study {study} of patient {old_patient} as study {} of patient {} ({} instances)",
            d.study_uid, d.patient_id, d.instances
        );
        e
    }

    /// Stores a de-identified copy of `study_uid` in the archive (run again,
    /// it replaces the copy with the same result). Audited as by `by`.
    pub async fn deidentify_study(
        &self,
        study_uid: &str,
        request: &Request,
        by: &str,
    ) -> Result<Deidentified, DeidError> {
        let (instances, key, old_patient, patient_id, new_study) =
            self.deid_plan(study_uid, request).await?;
        // Recorded however far it got (copies made before a failure stay).
        let mut made = 0;
        let copied: Result<(), DeidError> = async {
            for inst in &instances {
                let (_, _, bytes) = self.deidentify_instance(inst, &key, request).await?;
                self.store_replacing(&bytes).await?;
                made += 1;
            }
            Ok(())
        }
        .await;
        let done = Deidentified {
            study_uid: new_study,
            patient_id,
            instances: made,
        };
        let mut e = self.audit_export(
            by,
            study_uid,
            &done,
            &old_patient,
            "copy kept in the archive",
        );
        if copied.is_err() {
            e.outcome = Outcome::SeriousFailure;
            e.detail = format!("{} of {}; then it failed", e.detail, instances.len());
        }
        self.audit(e).await;
        copied?;
        Ok(done)
    }

    /// The de-identified files of `study_uid`, made one at a time as they are
    /// taken; audited (as by `by`) before the first is made.
    pub async fn deidentified(
        &self,
        study_uid: &str,
        request: &Request,
        by: &str,
    ) -> Result<Files, DeidError> {
        let (instances, key, old_patient, patient_id, new_study) =
            self.deid_plan(study_uid, request).await?;
        let done = Deidentified {
            study_uid: new_study.clone(),
            patient_id: patient_id.clone(),
            instances: instances.len(),
        };
        // The source is read for this download: recorded before.
        self.record_access(self.audit_export(by, study_uid, &done, &old_patient, "download"))
            .await?;
        Ok(Files {
            count: instances.len(),
            instances: instances.into_iter(),
            key,
            request: request.clone(),
            study_uid: new_study,
            patient_id,
        })
    }
}

/// A string attribute's first value, trimmed; empty if absent.
fn text(ds: &InMemDicomObject, tag: Tag) -> String {
    ds.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// What the walk needs besides the data set.
struct Walk<'a> {
    key: &'a ProjectKey,
    options: Options,
    days: i64,
    identifiers: Vec<String>,
    safe: &'a [SafePrivate],
}

/// Applies the profile to `ds` (a whole data set, no file meta) and adds
/// what a de-identified instance declares about itself.
pub fn deidentify(
    ds: &mut InMemDicomObject,
    key: &ProjectKey,
    request: &Request,
    safe: &[SafePrivate],
) {
    let issuer = text(ds, tags::ISSUER_OF_PATIENT_ID);
    let patient_id = text(ds, tags::PATIENT_ID);
    let mut identifiers = Vec::new();
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        Tag(0x0010, 0x1000), // Other Patient IDs (retired)
        tags::OTHER_PATIENT_NAMES,
        tags::PATIENT_BIRTH_NAME,
        tags::PATIENT_MOTHER_BIRTH_NAME,
        tags::PATIENT_BIRTH_DATE,
        tags::ACCESSION_NUMBER,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PERFORMING_PHYSICIAN_NAME,
        tags::OPERATORS_NAME,
        tags::INSTITUTION_NAME,
    ] {
        if let Some(value) = ds.get(tag).and_then(|e| e.to_str().ok()) {
            identifiers.push(value.trim().to_string());
            // Names also by their components (family, given, ...).
            identifiers.extend(
                value
                    .split(['^', '=', '\\', ' '])
                    .map(str::trim)
                    .filter(|p| p.chars().count() >= 2)
                    .map(String::from),
            );
        }
    }
    identifiers.sort_by_key(|i| std::cmp::Reverse(i.len()));
    identifiers.dedup();
    let walk = Walk {
        key,
        options: request.options,
        days: key.day_shift(&issuer, &patient_id),
        identifiers,
        safe,
    };
    walk_set(ds, &walk);

    let pseudonym = key.pseudonym(&issuer, &patient_id);
    let put = |ds: &mut InMemDicomObject, tag, vr, value: &str| {
        ds.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put(
        ds,
        tags::PATIENT_ID,
        VR::LO,
        request.patient_id.as_deref().unwrap_or(&pseudonym),
    );
    let name = format!("ANONYMOUS^{pseudonym}");
    put(
        ds,
        tags::PATIENT_NAME,
        VR::PN,
        request.patient_name.as_deref().unwrap_or(&name),
    );
    if let Some(d) = &request.study_description {
        put(ds, tags::STUDY_DESCRIPTION, VR::LO, d);
    }
    put(ds, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    put(
        ds,
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        "Custos: PS3.15 E.1 Basic Profile",
    );
    let items: Vec<InMemDicomObject> = request
        .options
        .codes()
        .into_iter()
        .map(|(value, meaning)| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                DataElement::new(
                    tags::CODING_SCHEME_DESIGNATOR,
                    VR::SH,
                    PrimitiveValue::from("DCM"),
                ),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
            ])
        })
        .collect();
    ds.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(items, Length::UNDEFINED),
    ));
    let temporal = if request.options.retain_dates {
        "MODIFIED"
    } else {
        "REMOVED"
    };
    put(
        ds,
        tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
        VR::CS,
        temporal,
    );
}

fn walk_set(ds: &mut InMemDicomObject, w: &Walk) {
    let all: Vec<Tag> = ds.tags().collect();
    for tag in all {
        if deid::is_private(tag.group()) {
            if !private_is_safe(ds, tag, w.safe) {
                ds.remove_element(tag);
            }
            continue;
        }
        if tag.element() == 0 {
            ds.remove_element(tag); // group lengths: recomputed or absent
            continue;
        }
        match deid::action(tag.group(), tag.element(), &w.options) {
            None | Some(Act::Keep) => clean_items(ds, tag, w),
            Some(Act::Remove) => {
                ds.remove_element(tag);
            }
            Some(Act::Empty) => empty(ds, tag),
            Some(Act::Dummy) => dummy(ds, tag, w),
            Some(Act::Uid) => remap(ds, tag, w),
            Some(Act::Clean) => clean(ds, tag, w),
        }
    }
}

fn vr_of(ds: &InMemDicomObject, tag: Tag) -> VR {
    ds.get(tag).map_or(VR::UN, |e| e.vr())
}

/// De-identifies the items of a sequence attribute (anything else stays).
fn clean_items(ds: &mut InMemDicomObject, tag: Tag, w: &Walk) {
    if vr_of(ds, tag) != VR::SQ {
        return;
    }
    ds.update_value(tag, |v| {
        if let Some(items) = v.items_mut() {
            for item in items.iter_mut() {
                walk_set(item, w);
            }
        }
    });
}

fn empty(ds: &mut InMemDicomObject, tag: Tag) {
    let vr = vr_of(ds, tag);
    if vr == VR::SQ {
        ds.put(DataElement::new(
            tag,
            VR::SQ,
            DataSetSequence::<InMemDicomObject>::empty(),
        ));
    } else {
        ds.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
}

fn dummy(ds: &mut InMemDicomObject, tag: Tag, w: &Walk) {
    let vr = vr_of(ds, tag);
    let value = match vr {
        VR::SQ => return clean_items(ds, tag, w),
        VR::UI => return remap(ds, tag, w),
        VR::DA => PrimitiveValue::from("19000101"),
        VR::DT => PrimitiveValue::from("19000101000000"),
        VR::TM => PrimitiveValue::from("000000"),
        VR::AS => PrimitiveValue::from("000D"),
        VR::DS | VR::IS => PrimitiveValue::from("0"),
        VR::AE | VR::CS | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::PN => {
            PrimitiveValue::from("ANONYMIZED")
        }
        VR::UR => PrimitiveValue::from("urn:custos:anonymized"),
        VR::US => PrimitiveValue::from(0u16),
        VR::SS => PrimitiveValue::from(0i16),
        VR::UL => PrimitiveValue::from(0u32),
        VR::SL => PrimitiveValue::from(0i32),
        VR::FL => PrimitiveValue::from(0f32),
        VR::FD => PrimitiveValue::from(0f64),
        // Binary and unknown values have no meaningful dummy: emptied.
        _ => PrimitiveValue::Empty,
    };
    ds.put(DataElement::new(tag, vr, value));
}

/// Each UID value replaced by the project's; a sequence's items walked.
fn remap(ds: &mut InMemDicomObject, tag: Tag, w: &Walk) {
    let vr = vr_of(ds, tag);
    if vr == VR::SQ {
        return clean_items(ds, tag, w);
    }
    let Some(values) = ds
        .get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.to_vec())
    else {
        return empty(ds, tag);
    };
    let mapped: Vec<String> = values
        .iter()
        .map(|u| u.trim_end_matches(['\0', ' ']))
        .filter(|u| !u.is_empty())
        .map(|u| w.key.uid(u))
        .collect();
    let value = if mapped.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::Strs(mapped.into())
    };
    ds.put(DataElement::new(tag, VR::UI, value));
}

fn clean(ds: &mut InMemDicomObject, tag: Tag, w: &Walk) {
    let vr = vr_of(ds, tag);
    match vr {
        VR::SQ => clean_items(ds, tag, w),
        VR::DA | VR::DT => {
            let Some(values) = ds
                .get(tag)
                .and_then(|e| e.to_multi_str().ok())
                .map(|v| v.to_vec())
            else {
                return empty(ds, tag);
            };
            let shifted: Option<Vec<String>> =
                values.iter().map(|v| deid::shift(v, w.days)).collect();
            match shifted {
                Some(s) if !s.is_empty() => {
                    ds.put(DataElement::new(tag, vr, PrimitiveValue::Strs(s.into())));
                }
                // Not a date that can be moved: it goes rather than stay true.
                _ => empty(ds, tag),
            }
        }
        // Times of day stay when dates move (the option keeps intervals).
        VR::TM | VR::AS => {}
        VR::AE | VR::CS | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::PN => {
            let Some(values) = ds
                .get(tag)
                .and_then(|e| e.to_multi_str().ok())
                .map(|v| v.to_vec())
            else {
                return;
            };
            let cleaned: Vec<String> = values
                .iter()
                .map(|v| deid::clean_text(v, &w.identifiers))
                .collect();
            ds.put(DataElement::new(
                tag,
                vr,
                PrimitiveValue::Strs(cleaned.into()),
            ));
        }
        // Numbers and binary values carry no names.
        _ => {}
    }
}

/// A private attribute is kept only when configured safe, with its creator.
fn private_is_safe(ds: &InMemDicomObject, tag: Tag, safe: &[SafePrivate]) -> bool {
    let (group, element) = (tag.group(), tag.element());
    if safe.is_empty() || !(0x0010..=0xFFFF).contains(&element) {
        return false;
    }
    if element <= 0x00FF {
        // A private creator: kept if a safe attribute lives in its block.
        let creator = text(ds, tag);
        return safe
            .iter()
            .any(|s| s.group == group && s.creator == creator);
    }
    let block = element >> 8;
    let creator = text(ds, Tag(group, block));
    safe.iter()
        .any(|s| s.group == group && u16::from(s.element) == element & 0xFF && s.creator == creator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ProjectKey {
        DeidKey::generate().project("t")
    }

    fn sample() -> InMemDicomObject {
        let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let item = InMemDicomObject::from_element_iter([
            s(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                "1.2.840.10008.5.1.4.1.1.2",
            ),
            s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.9"),
        ]);
        let mut ds = InMemDicomObject::from_element_iter([
            s(tags::PATIENT_NAME, VR::PN, "Smith^John"),
            s(tags::PATIENT_ID, VR::LO, "P-123"),
            s(tags::PATIENT_BIRTH_DATE, VR::DA, "19600102"),
            s(tags::PATIENT_SEX, VR::CS, "M"),
            s(tags::PATIENT_AGE, VR::AS, "064Y"),
            s(tags::STUDY_DATE, VR::DA, "20240301"),
            s(tags::STUDY_TIME, VR::TM, "093000"),
            s(tags::STUDY_DESCRIPTION, VR::LO, "CT chest SMITH"),
            s(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
            s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            s(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.6"),
            s(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4"),
            s(tags::ROWS, VR::US, "2"),
            s(Tag(0x0009, 0x0010), VR::LO, "ACME 1"),
            s(Tag(0x0009, 0x1001), VR::LO, "secret"),
            s(Tag(0x0009, 0x1002), VR::LO, "harmless"),
        ]);
        ds.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(vec![item], Length::UNDEFINED),
        ));
        ds
    }

    #[test]
    fn basic_profile_removes_replaces_and_declares() {
        let key = key();
        let mut ds = sample();
        deidentify(&mut ds, &key, &Request::default(), &[]);
        assert_eq!(text(&ds, tags::PATIENT_ID), key.pseudonym("", "P-123"));
        assert!(text(&ds, tags::PATIENT_NAME).starts_with("ANONYMOUS^"));
        assert_eq!(text(&ds, tags::PATIENT_BIRTH_DATE), ""); // Z
        assert_eq!(text(&ds, tags::STUDY_DATE), ""); // Z
        assert!(ds.get(tags::STUDY_DESCRIPTION).is_none()); // X
        assert!(ds.get(tags::PATIENT_AGE).is_none()); // X
        assert_eq!(text(&ds, tags::INSTITUTION_NAME), "ANONYMIZED"); // X/Z/D
        assert_eq!(text(&ds, tags::SOP_INSTANCE_UID), key.uid("1.2.3.4.5.6"));
        assert_eq!(text(&ds, tags::SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(text(&ds, tags::ROWS), "2");
        assert!(ds.get(Tag(0x0009, 0x1001)).is_none() && ds.get(Tag(0x0009, 0x0010)).is_none());
        let seq = ds.get(tags::REFERENCED_IMAGE_SEQUENCE).unwrap();
        let item = &seq.items().unwrap()[0];
        assert_eq!(
            text(item, tags::REFERENCED_SOP_INSTANCE_UID),
            key.uid("1.2.3.4.5.9")
        );
        assert_eq!(
            text(item, tags::REFERENCED_SOP_CLASS_UID),
            "1.2.840.10008.5.1.4.1.1.2"
        );
        assert_eq!(text(&ds, tags::PATIENT_IDENTITY_REMOVED), "YES");
        assert_eq!(
            text(&ds, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED),
            "REMOVED"
        );
    }

    #[test]
    fn options_keep_shifted_dates_characteristics_and_clean_descriptions() {
        let key = key();
        let mut ds = sample();
        let request = Request {
            options: Options::parse(
                "retain-dates,retain-patient-characteristics,clean-descriptors",
            )
            .unwrap(),
            ..Default::default()
        };
        let safe = ["0009,xx02 ACME 1".parse::<SafePrivate>().unwrap()];
        deidentify(&mut ds, &key, &request, &safe);
        let days = key.day_shift("", "P-123");
        assert_eq!(
            text(&ds, tags::STUDY_DATE),
            deid::shift("20240301", days).unwrap()
        );
        assert_eq!(text(&ds, tags::STUDY_TIME), "093000");
        assert_eq!(text(&ds, tags::PATIENT_AGE), "064Y");
        assert_eq!(text(&ds, tags::STUDY_DESCRIPTION), "CT chest");
        assert_eq!(text(&ds, Tag(0x0009, 0x1002)), "harmless");
        assert!(ds.get(Tag(0x0009, 0x1001)).is_none());
        assert_eq!(
            text(&ds, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED),
            "MODIFIED"
        );
        let codes = ds.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).unwrap();
        assert_eq!(codes.items().unwrap().len(), 4);
    }

    #[test]
    fn safe_private_entries_parse() {
        assert!("0043,xx39 GEMS_PARM_01".parse::<SafePrivate>().is_ok());
        assert!("0042,xx39 EVEN".parse::<SafePrivate>().is_err());
        assert!("0043,1039 NOX".parse::<SafePrivate>().is_err());
        assert!("0043,xx39".parse::<SafePrivate>().is_err());
    }
}
