//! Types generated from `proto/` by prost. Field numbers are frozen: see the golden tests.
#![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]

/// The envelope around every event.
pub mod envelope {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cloudcafe.envelope.v1.rs"));
    }
}

/// Order aggregate events.
pub mod orders {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cloudcafe.orders.v1.rs"));
        /// Old layouts, read only by upcasters.
        pub mod legacy {
            include!(concat!(env!("OUT_DIR"), "/cloudcafe.orders.v1.legacy.rs"));
        }
    }
}

/// StockItem aggregate events.
pub mod inventory {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cloudcafe.inventory.v1.rs"));
    }
}

/// LoyaltyAccount aggregate events.
pub mod loyalty {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cloudcafe.loyalty.v1.rs"));
    }
}

/// MenuItem aggregate events.
pub mod menu {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cloudcafe.menu.v1.rs"));
    }
}

/// The KPL aggregated-record format (proto2), for [`crate::kpl`].
pub mod kpl {
    include!(concat!(env!("OUT_DIR"), "/kpl.rs"));
}
