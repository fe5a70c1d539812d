//! Stopping the extension: every session ends and every device is closed, but bound devices
//! stay bound (in the file) and are claimed again at the next start. Dropping a claim closes
//! the device without giving it back to its kernel driver, as a crash would.

use tracing::info;

use super::service::Extension;

impl Extension {
    /// Ends every session and closes every device; only interrupted unbinds are finished at
    /// the next start.
    pub async fn shutdown(&self) {
        let _op = self.ops.lock().await;
        let taken = self.book().take_all();
        for t in taken {
            self.exports.remove(&t.record.busid);
            super::sessions::end_sessions(t.sessions).await;
            drop(t.handle);
        }
        info!("extension stopped; bound devices will be claimed again at the next start");
    }
}
