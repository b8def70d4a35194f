package server

import "slices"

// Command names the IM servers are known to send: OpenIM's 52 (protocol/openim.md) and Tencent's
// documented callbacks. The bridge takes any command (the rest are stored raw, and new ones keep
// coming); the lists only catch typos where a name is configured (UnknownCommands).
var (
	openimCommands = []string{
		"callbackAfterAddFriendAgreeCommand",
		"callbackAfterAddFriendCommand",
		"callbackAfterCreateGroupChatConversationsCommand",
		"callbackAfterCreateGroupCommand",
		"callbackAfterCreateSingleChatConversationsCommand",
		"callbackAfterDeleteFriendCommand",
		"callbackAfterDisMissGroupCommand",
		"callbackAfterGroupMsgReadCommand",
		"callbackAfterImportFriendsCommand",
		"callbackAfterJoinGroupCommand",
		"callbackAfterKickGroupCommand",
		"callbackAfterMsgSaveDBCommand",
		"callbackAfterQuitGroupCommand",
		"callbackAfterRemoveBlackCommand",
		"callbackAfterSendGroupMsgCommand",
		"callbackAfterSendSingleMsgCommand",
		"callbackAfterSetFriendRemarkCommand",
		"callbackAfterSetGroupInfoCommand",
		"callbackAfterSetGroupInfoExCommand",
		"callbackAfterSetGroupMemberInfoCommand",
		"callbackAfterSingleMsgReadCommand",
		"callbackAfterTransferGroupOwnerCommand",
		"callbackAfterUpdateUserInfoCommand",
		"callbackAfterUpdateUserInfoExCommand",
		"callbackAfterUserKickOffCommand",
		"callbackAfterUserOfflineCommand",
		"callbackAfterUserOnlineCommand",
		"callbackAfterUserRegisterCommand",
		"callbackBeforeAddBlackCommand",
		"callbackBeforeAddFriendAgreeCommand",
		"callbackBeforeAddFriendCommand",
		"callbackBeforeAfterMsgCommand",
		"callbackBeforeCreateGroupChatConversationsCommand",
		"callbackBeforeCreateGroupCommand",
		"callbackBeforeCreateSingleChatConversationsCommand",
		"callbackBeforeGroupOnlinePushCommand",
		"callbackBeforeImportFriendsCommand",
		"callbackBeforeInviteJoinGroupCommand",
		"callbackBeforeJoinGroupCommand",
		"callbackBeforeMembersJoinGroupCommand",
		"callbackBeforeMsgModifyCommand",
		"callbackBeforeOfflinePushCommand",
		"callbackBeforeOnlinePushCommand",
		"callbackBeforeSendGroupMsgCommand",
		"callbackBeforeSendSingleMsgCommand",
		"callbackBeforeSetFriendRemarkCommand",
		"callbackBeforeSetGroupInfoCommand",
		"callbackBeforeSetGroupInfoExCommand",
		"callbackBeforeSetGroupMemberInfoCommand",
		"callbackBeforeUpdateUserInfoCommand",
		"callbackBeforeUpdateUserInfoExCommand",
		"callbackBeforeUserRegisterCommand",
	}
	tencentCommands = []string{
		"State.StateChange",
		"Sns.CallbackFriendAdd",
		"Sns.CallbackFriendDelete",
		"Sns.CallbackBlackListAdd",
		"Sns.CallbackBlackListDelete",
		"Sns.CallbackPrevFriendAdd",
		"Sns.CallbackPrevFriendResponse",
		"C2C.CallbackBeforeSendMsg",
		"C2C.CallbackAfterSendMsg",
		"C2C.CallbackAfterMsgReport",
		"C2C.CallbackAfterMsgWithDraw",
		"Group.CallbackBeforeCreateGroup",
		"Group.CallbackAfterCreateGroup",
		"Group.CallbackBeforeApplyJoinGroup",
		"Group.CallbackBeforeInviteJoinGroup",
		"Group.CallbackAfterNewMemberJoin",
		"Group.CallbackAfterMemberExit",
		"Group.CallbackBeforeSendMsg",
		"Group.CallbackAfterSendMsg",
		"Group.CallbackAfterGroupFull",
		"Group.CallbackAfterGroupDestroyed",
		"Group.CallbackAfterGroupInfoChanged",
		"Group.CallbackAfterRecallMsg",
		"Group.CallbackAfterGroupAttrChanged",
	}
)

// knownCommand reports whether cmd is a command name OpenIM or Tencent is known to send.
func knownCommand(cmd string) bool {
	return slices.Contains(openimCommands, cmd) || slices.Contains(tencentCommands, cmd)
}

// UnknownCommands are the command names of p that no IM server is known to send, sorted: most
// likely typos, whose callbacks would silently take the default policy.
func (p *Policies) UnknownCommands() []string {
	if p == nil {
		return nil
	}
	var out []string
	for cmd := range p.Commands {
		if !knownCommand(cmd) {
			out = append(out, cmd)
		}
	}
	slices.Sort(out)
	return out
}
