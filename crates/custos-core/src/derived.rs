//! Derived objects: what a viewer makes from images — structured reports
//! (measurements), segmentations, presentation states, key object
//! selections. The `store-derived` right stores these and nothing else, so a
//! radiologist can save OHIF's measurements without being able to add images.

/// SOP classes of derived objects (PS3.4 Annex B.5).
pub const DERIVED_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22", // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33", // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34", // Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35", // Extensible SR
    "1.2.840.10008.5.1.4.1.1.88.59", // Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.66.4",  // Segmentation
    "1.2.840.10008.5.1.4.1.1.11.1",  // Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.2",  // Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.3",  // Pseudo-Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.4",  // Blending Softcopy Presentation State
];

/// Whether `sop_class_uid` is a derived object.
pub fn is_derived(sop_class_uid: &str) -> bool {
    DERIVED_SOP_CLASSES.contains(&sop_class_uid.trim_end_matches('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Principal, Role};

    #[test]
    fn radiologists_store_derived_objects_only_and_store_includes_them() {
        assert!(is_derived("1.2.840.10008.5.1.4.1.1.88.22"));
        assert!(!is_derived("1.2.840.10008.5.1.4.1.1.2"));
        let user = |role| Principal::User {
            name: "u".into(),
            role,
            read_only: false,
        };
        let rad = user(Role::Radiologist);
        assert!(rad.may(Action::StoreDerived) && !rad.may(Action::Store));
        let up = user(Role::Uploader);
        assert!(up.may(Action::StoreDerived) && up.may(Action::Store));
        assert!(!user(Role::Auditor).may(Action::StoreDerived));
        let read_only = Principal::User {
            name: "u".into(),
            role: Role::Radiologist,
            read_only: true,
        };
        assert!(!read_only.may(Action::StoreDerived));
        // `store` does not list the right it implies.
        assert_eq!(
            Role::Uploader.permissions().to_string(),
            "echo,store,commit,mpps"
        );
    }
}
