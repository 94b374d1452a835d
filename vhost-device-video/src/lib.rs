//! vhost-device-video
